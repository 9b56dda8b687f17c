"""balancing stage of echomtl."""
