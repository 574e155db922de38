"""The pictures: report.html, plots, the history trend and site."""
