"""Sharing and serving models: loading, saving and pushing model folders (the Hub), and the web app."""
