"""The Redis engine: the store contract on a Redis server shared by broker processes on many machines.

Every operation is one Lua script (``scripts/``), so it is atomic on the server; a script never
calls back into Python. Times are the callers' (``now``), as the contract says; the server's clock
is never read. Wake-ups travel by pub/sub (``notifier.py``).

Key layout. Every key of a namespace starts with ``mb:{<ns>}:`` (the braces are a Cluster hash
tag: one namespace, one slot). Below it (``<r>`` a recipient's session id, ``<m>`` a message id):

=====================  ==========  =================================================================
key                    type        holds
=====================  ==========  =================================================================
``protocols``          set         protocol names with at least one version
``pr:<name>``          hash        version -> the protocol row as JSON (immutable)
``pc:<name>``          hash        version -> its capabilities as JSON (what a snapshot reads)
``adapted``            set         protocol names with adapters
``ad:<name>``          hash        ``from>to`` -> the adapter row as JSON (immutable)
``names``              hash        session name -> session id
``s:<id>``             hash        the session row (owner, host, pid, last_seen, revision, ...)
``ag:<id>``            hash        ``<peer id>\\0<protocol>`` -> the version this session writes in
``agreeing``           set         session ids with agreements (for pruning)
``seq``                string      the global sequence (INCR): the store order of deliveries
``m:<m>``              hash        the message (sender, protocol, version, payload, ...; ``live``:
                                   how many of its deliveries remain; ``pos``: its place in ``mseq``)
``mseq``               string      the order messages were stored in (INCR), for history
``to:<m>``             list        its recipients, in the order their deliveries were stored
``msgs``               zset        message ids by created_at (for pruning)
``rp:<request id>``    list        replies to a request (``take_reply``)
``idem:<sender>:<k>``  hash        an idempotency key: ``at`` (created_at) and the first ``answer``;
                                   expires 25 h after it is set
``d:<r>:<m>``          hash        one delivery: state, attempts, visible_at, rank, seq, ...
``ready:<r>``          zset        waiting and visible, by rank = -priority * 2^44 + seq
``later:<r>``          zset        waiting but hidden (leased, or released with a delay), by visible_at
``exp:<r>``            zset        waiting with an expiry, by expires_at (depth = ready + later -
                                   expired)
``tries:<r>``          zset        waiting and leased before, by attempts (for ``max_attempts``)
``dead:<r>``           zset        dead letters, by seq (the cursor is a seq)
``done:<r>``           zset        acked or dead-lettered, by updated_at (for pruning)
``inboxes``            set         recipient ids with deliveries (for pruning)
``evseq``              string      the events' sequence (INCR)
``ev``                 stream      the traffic log: one entry ``<n>-0`` per change of a delivery
                                   (at, kind, message, sender, recipient, protocol, version, ...)
``evat``               zset        event numbers by ``at`` (for ``since`` and pruning)
``hist:<id>``          zset        message ids the session sent or received, by ``pos``
``st:<id>``            hash        a stream (sender, recipient, state, chunks, last_at, ...)
``sc:<id>``            hash        its chunks: number -> message id
``stopen:<sender>``    set         the sender's open streams
``stidle``             zset        open streams by their last append
``stdone``             zset        closed or aborted streams by when they ended (for pruning)
``rb:<id>``            hash        a session's rate bucket (tokens, updated_at)
``buckets``            set         the sessions with a bucket
``bell:<id>``          channel     pub/sub: wakes the process holding session ``<id>``
``traffic``            channel     pub/sub: every notify, for the processes that ``watch``
=====================  ==========  =================================================================
"""

from __future__ import annotations

from .catalog import Catalog
from .features import Features
from .notifier import RedisNotifier
from .queue import Queue
from .traffic import Traffic

__all__ = ["RedisNotifier", "RedisStore"]


class RedisStore(Catalog, Queue, Traffic, Features):
    """The catalog, the queue, the traffic log and the message features on one Redis namespace; the
    contract's network engine."""
