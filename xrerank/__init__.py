"""xrerank: deploy cross-encoder rerankers on Xinference and prove they answer correctly.

The command line is `xrerank` (xrerank.cli); apps use xrerank.client.Reranker, or the framework
integrations in xrerank.integrations.
"""
