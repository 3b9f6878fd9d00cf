"""The widget layer: panels (traitlets model + ipywidgets view), plots and progress.

It calls the method layer; nothing below it imports it.
"""
from lfmlab.progress import headless, progress
from lfmlab.ui.panel import BadInput, Panel
from lfmlab.ui.probe import ProbePanel

__all__ = ["Panel", "BadInput", "ProbePanel", "progress", "headless"]
