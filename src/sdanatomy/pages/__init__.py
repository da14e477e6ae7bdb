"""What only the book's pages need: tables, diagrams, plots, the status page and Sphinx glue.

The top layer: it may import every other part of the package, and nothing imports it.
"""
