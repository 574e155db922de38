"""The answer: the leaderboard and the recommendation."""
