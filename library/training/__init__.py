"""What train.py is made of: its arguments, the task data and collator, the model and its initialisation recipes,
the trainer with its guards, the metrics, the run's output folder (model card, learning curve, run summary) and
prediction. train.py reads top-down through them; docs/TRAINING.md explains the recipe."""
