"""Turning one source item (a video file, an image file) into arrays; knows nothing of storage."""
