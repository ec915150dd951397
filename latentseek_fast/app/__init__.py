"""The application: the ``latentseek-fast`` command line, evaluation, results files, torchrun."""
