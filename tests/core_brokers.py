"""A non-ORM django-q2 broker for the dispatcher tests (stands in for Redis/SQS: no delayed
delivery)."""

from django_q.brokers import Broker

SENT: list = []


class ListBroker(Broker):
    @staticmethod
    def get_connection(list_key=None):
        return SENT

    def enqueue(self, task):
        SENT.append(task)
        return len(SENT)
