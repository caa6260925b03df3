"""Option values shared by the classifier code and its command line (no heavy imports)."""

MODEL_KINDS: tuple[str, ...] = ("logistic", "svm")
ENGINES: tuple[str, ...] = ("kernel", "plain")
SPLITS: tuple[str, ...] = ("kfold", "center", "external")
