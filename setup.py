"""dqnn: Direct Quantization for low-bit-width convolutional networks in JAX/Flax."""
import pathlib

import setuptools

_REQUIREMENTS = [
    line.split('#')[0].strip()
    for line in pathlib.Path(__file__).with_name('requirements.txt').read_text().splitlines()
    if line.split('#')[0].strip()
]
_TEST_ONLY = ('pytest', 'hypothesis', 'pytest-xdist')

setuptools.setup(
    name='dqnn',
    version='0.1.0',
    description='Direct Quantization (DQ) for training low-bit-width CNNs in JAX/Flax.',
    packages=setuptools.find_packages(include=['dqnn', 'dqnn.*']),
    python_requires='>=3.10',
    install_requires=[r for r in _REQUIREMENTS if not r.startswith(_TEST_ONLY)],
    package_data={'dqnn.data.sample': ['*.npz']},
    extras_require={
        'test': [r for r in _REQUIREMENTS if r.startswith(_TEST_ONLY)],
        # TFDS's own download-and-prepare (CIFAR-100 download, `tfds build`, `tfds
        # convert_format`) needs TensorFlow; training, evaluation and export do not.
        'tf': ['tensorflow-cpu>=2.18; platform_machine == "x86_64"',
               'tensorflow>=2.18; platform_machine != "x86_64"'],
        # --config.input_backend=dali: NVIDIA DALI decodes training JPEGs (nvJPEG on a CUDA 12
        # GPU host; it also runs CPU-only, slower than the grain path).
        'dali': ['nvidia-dali-cuda120'],
    },
)
