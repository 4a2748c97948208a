"""A bounded first-in first-out buffer of readings kept while the broker is unreachable."""


class RingBuffer:
    """Holds at most ``capacity`` items; when full, the oldest is dropped (and counted) to make room.

    A preallocated list used as a ring, so its memory is fixed from boot and never grows.
    """

    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError("buffer capacity must be >= 1")
        self.capacity = capacity
        self._items = [None] * capacity
        self._head = 0  # index of the oldest item
        self._len = 0
        self.dropped = 0

    def __len__(self):
        return self._len

    def append(self, item):
        """Add ``item`` as the newest; returns True, or False when the oldest had to be dropped."""
        if self._len == self.capacity:
            self._items[self._head] = item
            self._head = (self._head + 1) % self.capacity
            self.dropped += 1
            return False
        self._items[(self._head + self._len) % self.capacity] = item
        self._len += 1
        return True

    def peek(self):
        """The oldest item (None when empty), left in place until ``pop`` confirms it was sent."""
        return self._items[self._head] if self._len else None

    def pop(self):
        """Remove and return the oldest item."""
        if not self._len:
            raise IndexError("pop from an empty buffer")
        item = self._items[self._head]
        self._items[self._head] = None
        self._head = (self._head + 1) % self.capacity
        self._len -= 1
        return item
