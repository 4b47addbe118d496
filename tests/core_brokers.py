"""A non-ORM django-q2 broker for the dispatcher tests (stands in for Redis/SQS: no delayed
delivery)."""

from django_q.brokers import Broker
from django_q.brokers.orm import ORM

SENT: list = []


class ListBroker(Broker):
    @staticmethod
    def get_connection(list_key=None):
        return SENT

    def enqueue(self, task):
        SENT.append(task)
        return len(SENT)


class DownBroker(Broker):
    """A Redis-like broker whose server is unreachable."""

    @staticmethod
    def get_connection(list_key=None):
        return None

    def enqueue(self, task):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


class FailingORM(ORM):
    """The ORM broker failing after it wrote its queue row (the row must roll back with it)."""

    def enqueue(self, task):
        super().enqueue(task)
        raise RuntimeError("the broker failed after writing")
