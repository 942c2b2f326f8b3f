"""Install coic-basicsr: CoIC / RDMC deraining as a BasicSR plugin."""
from setuptools import find_packages, setup

setup(
    name='coic-basicsr',
    version='0.1.0',
    description='CoIC (ICLR 2024) and RDMC deraining for the BasicSR toolbox: mixed-rain data, '
    'instance-level modulation, contrastive training',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='MIT',
    python_requires='>=3.9',
    packages=find_packages(include=['coic_basicsr', 'coic_basicsr.*']) + ['coic_basicsr.datasets_meta'],
    package_dir={'coic_basicsr.datasets_meta': 'datasets_meta'},  # dataset cards/pair lists ship with wheels
    package_data={'coic_basicsr': ['data/assets/*'], 'coic_basicsr.datasets_meta': ['*.md', '*.txt', '*.yml']},
    install_requires=[
        'basicsr>=1.4.2',
        'torch>=2.1',
        'torchvision',
        'opencv-python',
        'lmdb',
        'numpy',
        'pyyaml',
        'scikit-image',
        'scipy',
        'tensorboard',
        'tqdm',
        'matplotlib>=3.5',  # basicsr analyze (matplotlib.colormaps)
    ],
    extras_require={'test': ['pytest', 'pytest-timeout']},
    entry_points={'console_scripts': ['basicsr = coic_basicsr.cli:main']},
)
