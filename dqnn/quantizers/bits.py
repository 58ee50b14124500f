"""Bit-width validation shared by every quantizer."""

SUPPORTED_BITS = (1, 2, 3, 4, 8)
FULL_PRECISION = 32


def check_bits(bits, what: str = 'bits') -> int:
  """Returns `bits` if it is a supported bit-width (or 32 = full precision), else raises."""
  if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS + (FULL_PRECISION,):
    raise ValueError(
        f'{what} must be one of {", ".join(map(str, SUPPORTED_BITS))} or {FULL_PRECISION} '
        f'(full precision); got {bits!r}.')
  return bits
