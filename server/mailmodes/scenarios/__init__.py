"""The known-bad catalogue: every scenario with what a correct client does (catalogue.py), the
protocol misbehaviours as data (misbehaviour.py), and the deliberately bad certificates
(badcerts.py, cryptography loaded only when one is served)."""
