"""Untrain every class of a trained classifier in one round (the weight-filter adapter).

    accelerate launch recipes/train.py --config recipes/configs/fashion_mnist_resnet.yaml

Two real DDP processes on a CPU-only machine (gloo):

    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no --main_process_port 29512 \
        recipes/train.py --cpu --config recipes/configs/fashion_mnist_resnet.yaml

Resume an interrupted run where it stopped: add ``--resume latest`` (with ``--checkpoint_every N``).
``python recipes/train.py --help`` lists every option; the command is ``hf_unlearn.commands.train``,
the loop ``hf_unlearn.training.untrain``.
"""

from hf_unlearn.commands.train import main

if __name__ == "__main__":
    main()
