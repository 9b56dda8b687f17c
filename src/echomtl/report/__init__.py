"""report stage of echomtl."""
