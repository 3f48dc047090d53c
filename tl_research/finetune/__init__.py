"""What trains and how fast: strategies (a registry; a phase says per parameter what trains), freezing, LR schedules."""
