"""The paper's experiments, each a module run from the repository root: `python -m experiments.<name>`."""
