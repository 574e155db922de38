"""History: the store of session records and comparisons between them."""
