"""What trains and how fast: strategies, freezing of depth units, LR schedules."""
