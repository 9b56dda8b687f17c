"""echomtl: multi-task YOLOv5 (regurgitation jets + echo view) and loss-balancing study."""

__version__ = "0.1.0"
