"""evaluation stage of echomtl."""
