"""Training stage: the loop and the pieces of the YOLOv5 v7.0 recipe it uses."""
