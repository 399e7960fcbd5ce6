"""Parley: a customer-support chatbot service.

The core knows conversations and models and nothing of any chat platform; adapters (in the
sibling package ``adapters``) turn platform messages into :class:`bot.events.Event` and show
replies the platform's way.
"""

__version__ = "0.1.0"
