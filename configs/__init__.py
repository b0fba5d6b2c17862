"""The shipped deployment files: installed as the package xrerank.configs, edited here."""
