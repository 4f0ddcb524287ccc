"""What wad shows of itself: Prometheus metrics (`metrics`) and the event log (`eventlog`)."""
