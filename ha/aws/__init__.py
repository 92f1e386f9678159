"""The Amazon MQ control plane (``mqemu aws``): boto3's ``mq`` API over real mqemu topologies.

``command`` holds the command line; ``server`` the HTTP side; ``model`` the botocore model
it follows; ``service`` and ``users`` the operations; ``state`` the records; ``brokers`` the
nodes behind each broker; ``engines`` and ``configs`` what Amazon MQ offers and accepts.
"""
