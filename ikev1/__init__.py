"""IKEv1 (RFC 2409): Main Mode with pre-shared keys and Quick Mode, a second key exchange
on the ISAKMP framework (``isakmp/``). It imports nothing of ``kink/`` or ``kinkd/``.

* :mod:`ikev1.phase1` -- phase-1 (ISAKMP SA) attributes and proposals (RFC 2409 App. A);
* :mod:`ikev1.crypto` -- SKEYID and its derivatives, the AES key expansion (App. B),
  IVs and CBC, HASH_I/HASH_R, Quick Mode and Informational HASHes (§5, §5.5, §5.7);
* :mod:`ikev1.engine` -- the sans-I/O engine (Main Mode, Quick Mode, Informational).
"""
