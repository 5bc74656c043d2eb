# Training targets. The demo trains its small model only when model.dir holds none
# (a checkpoint rule: the segmentation jobs' model checksum is known once it has run);
# the rules exist only while model.dir holds no model, so an existing model is never
# retrained (delete the folder to train again). `retrain` fine-tunes
# model.dir on retrain.data into retrain.out_dir (voxtell retrain: evaluates parent and
# child, moves the `current` symlink beside the child only if no old concept got worse).


if config["demo"]["train"]["enabled"] and not model_exists(MODEL_DIR):

    rule demo_training_data:
        output:
            dataset=f"{config['demo']['train']['data_dir']}/dataset.json",
        params:
            out_dir=subpath(output.dataset, parent=True),
            n_cases=config["demo"]["train"]["n_cases"],
            seed=config["demo"]["train"]["seed"],
        log:
            "logs/train/demo_training_data.log",
        resources:
            mem_mb=2000,
            runtime=30,
        conda:
            "../../envs/torch.yaml"
        script:
            "../../scripts/demo_training_data.py"


    checkpoint train_demo_model:
        input:
            train_input,
        output:
            checkpoint=MODEL_CHECKPOINT,
        params:
            data_dir=config["demo"]["train"]["data_dir"],
            model_dir=subpath(output.checkpoint, ancestor=2),
            preset=config["demo"]["train"]["preset"],
            extra=config["demo"]["train"]["args"],
        log:
            "logs/train/train_demo_model.log",
        benchmark:
            "benchmarks/train/train_demo_model.tsv"
        threads: config["threads"]["train"]
        resources:
            mem_mb=lambda wildcards, attempt: 8000 * attempt,
            runtime=lambda wildcards, attempt: 120 * attempt,
            gpu=gpus_for_segment,
        conda:
            "../../envs/torch.yaml"
        script:
            "../../scripts/train_demo_model.py"


if config["retrain"]["data"] and config["retrain"]["out_dir"]:

    rule retrain_model:
        input:
            parent=MODEL_CHECKPOINT,
        output:
            checkpoint=f"{config['retrain']['out_dir']}/fold_0/checkpoint_final.pth",
        params:
            parent_dir=subpath(input.parent, ancestor=2),
            data=config["retrain"]["data"],
            out_dir=subpath(output.checkpoint, ancestor=2),
            extra=config["retrain"]["args"],
        log:
            "logs/train/retrain_model.log",
        benchmark:
            "benchmarks/train/retrain_model.tsv"
        threads: config["threads"]["train"]
        resources:
            mem_mb=lambda wildcards, attempt: 8000 * attempt,
            runtime=lambda wildcards, attempt: 240 * attempt,
            gpu=gpus_for_segment,
        conda:
            "../../envs/torch.yaml"
        script:
            "../../scripts/retrain_model.py"
