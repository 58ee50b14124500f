"""Exceptions raised by the dqnn input-data package."""


class DatasetNotFoundError(ValueError):
  """A requested TFDS dataset is not prepared in `data_dir` and cannot be fetched.

  The message always contains the exact offline command
  (`python -m dqnn.data.prepare ...`) that builds the dataset from local files.
  """


class DatasetDamagedError(ValueError):
  """A prepared dataset's file cannot be read back: truncated, replaced or with a damaged block.

  The message names the file and the commands that set the dataset aside and prepare it again.
  """
