"""I/O connectors (Kinesis, Kafka, S3), installed as ``streamkit.connectors``.

The top-level ``connectors/`` folder of the repository is the source of the
``streamkit.connectors`` package (``streamkit/connectors`` links to it); nothing is
installed under the generic top-level name ``connectors``.
"""
