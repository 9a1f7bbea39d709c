from setuptools import find_packages, setup

setup(
    name="amp-tf",
    version="0.1.0",
    description="Out-of-distribution detection with neural network anchoring (AMP) for Keras 3 / TensorFlow",
    packages=find_packages(include=["amp_tf", "amp_tf.*", "trainers", "eval"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow-cpu==2.21.0",
        "keras==3.15.1",
        "tensorflow-datasets==4.9.10",
        "importlib_resources",
        "tensorboard==2.21.0",
        "keras-tuner==1.4.8",
        "scikit-learn>=1.9,<1.10",
        "numpy>=2,<3",
        "matplotlib",
        "pillow",
    ],
    extras_require={"test": ["pytest"]},
    entry_points={"console_scripts": [
        "amp-fmnist=amp_tf.cli.fmnist:main",
        "amp-cifar=amp_tf.cli.cifar:main",
        "amp-imagenet=amp_tf.cli.imagenet:main",
        "amp-tune=amp_tf.cli.tune:main",
        "amp-eval-ood=amp_tf.cli.ood:main",
        "amp-resize-study=amp_tf.cli.resize_study:main",
    ]},
)
