"""The core: a platform's event in, an answer out, for every platform alike. ``service``
(the front door: admission, the durable inbox, recovery), ``policy`` and ``ratelimit`` (who
gets an answer), ``conversation`` (history, the prompt and its trimming, grounding in the
knowledge base, streaming into a ``reply``), ``text`` and ``small_talk``, ``metrics``.
It imports generation, knowledge and storage, never an adapter or the app layer."""
