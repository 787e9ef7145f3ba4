"""storyroom: real-time recording rooms for facilitated One Small Step conversations."""

__version__ = "0.1.0"
