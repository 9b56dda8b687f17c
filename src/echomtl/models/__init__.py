"""models stage of echomtl."""
