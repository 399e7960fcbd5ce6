"""`parley eval`: answering a golden set of questions, and scoring the answers."""
