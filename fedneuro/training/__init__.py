"""One site's local training and evaluation."""
