"""data stage of echomtl."""
