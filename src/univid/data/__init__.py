"""Training data: the bundled shapes world and the sample stream shared by every rank."""


class BadSample(Exception):
    """Raised by a dataset for an item that cannot be used; the message says why.

    The trainer counts and logs such items and trains on the rest of the batch."""
