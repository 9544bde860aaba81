"""llmpack: package Hugging Face language models for the browser."""

__version__ = "0.1.0"
