"""What wad shows of itself: Prometheus metrics (`metrics`)."""
