"""The ``hf-unlearn`` sub-commands: each parses its options into dataclasses (``HfArgumentParser``)
and calls the library function that takes the same dataclasses, so the command line and the Python
API are one thing.

    from hf_unlearn.commands.arguments import DataArguments, RuntimeArguments, parse_arguments
"""
