"""Fine-tuning: training files from rows, jobs, their journal and events."""
