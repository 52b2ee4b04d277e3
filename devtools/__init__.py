"""Local development and test tools; never deployed with the function app."""
