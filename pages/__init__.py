"""The dashboard's pages (see dashboard.py): one module per page, plus what they share."""
