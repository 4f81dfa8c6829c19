"""Train the base classifier that unlearning starts from.

From scratch, with a small preset (Fashion-MNIST is read from the Debian package
``dataset-fashion-mnist`` when installed, else from the Hub):

    accelerate launch recipes/train_base.py --preset resnet-tiny --dataset fashion_mnist \
        --epochs 8 --output_dir runs/base-resnet

Fine-tuning a Hub or local checkpoint (its classification head is replaced to fit the dataset):

    accelerate launch recipes/train_base.py --model_name_or_path google/vit-base-patch16-224 \
        --dataset uoft-cs/cifar10 --epochs 3 --batch_size 32 --output_dir runs/base-vit-cifar10

Options can come from a YAML file whose keys are the option names, e.g. ``base.yaml``::

    preset: resnet-tiny
    dataset: fashion_mnist
    epochs: 8
    output_dir: runs/base-resnet

and ``--config base.yaml --epochs 3``: flags given on the command line win. The output
directory receives the model and image processor (``save_pretrained``, safetensors),
``metrics.json`` (test accuracy, training time, versions, machine) and the resolved
``train_base_config.yaml``. ``python recipes/train_base.py --help``
lists every option. Real two-process DDP on a CPU-only machine:

    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no --main_process_port 29511 \
        recipes/train_base.py --cpu --preset resnet-tiny --output_dir runs/base-ddp

The loop itself is ``hf_unlearn.training.base.train_base``, called from Python with the same options as
``hf_unlearn.commands.train_base.TrainBaseArguments`` (used by the tests).
"""

import os
import sys

try:
    from hf_unlearn.commands.train_base import main
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from hf_unlearn.commands.train_base import main


if __name__ == "__main__":
    main()
