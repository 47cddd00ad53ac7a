"""The preference objectives, each a TRL trainer (`workbench.train.trl_trainers` builds them): what data each reads,
its reference model, and TRL 1.16's loss variants per method (`loss_type` of DPOConfig's and GRPOConfig's help,
KTOConfig's and CPOConfig's field choices), checked at recipe load; tests/test_recipe.py checks them against the
installed TRL. orpo and reward have none. Left out (`loss_types_left_out`): those that need a TRL setting wb does
not pass. Their trainable parameters are the recipe's `preference.weights` (LoRA, QLoRA or every weight), so
`wb plan` does not list them.
"""

from __future__ import annotations

from workbench.methods.spec import MethodSpec

SPECS = (
    MethodSpec(
        "dpo",
        "preference",
        "preference.weights",
        "direct preference optimisation on pairs",
        order=12,
        serves_as_lora=True,
        trainer="DPOTrainer",
        data="pairs",
        reference="policy",
        loss_types=(
            "sigmoid",
            "hinge",
            "ipo",
            "nca_pair",
            "robust",
            "bco_pair",
            "sppo_hard",
            "aot",
            "aot_unpaired",
            "apo_zero",
            "apo_down",
            "discopop",
            "sft",
            "sigmoid_norm",
        ),
        loss_types_left_out={"exo_pair": "TRL's label_smoothing > 0"},
    ),
    MethodSpec(
        "orpo",
        "preference",
        "preference.weights",
        "odds-ratio preference optimisation, no reference",
        order=13,
        serves_as_lora=True,
        trainer="ORPOTrainer",
        data="pairs",
    ),
    MethodSpec(
        "simpo",
        "preference",
        "preference.weights",
        "length-normalised preference optimisation, no reference",
        order=14,
        serves_as_lora=True,
        trainer="CPOTrainer",
        data="pairs",
        loss_types=("sigmoid", "hinge", "ipo", "simpo", "alphapo"),
    ),
    MethodSpec(
        "kto",
        "preference",
        "preference.weights",
        "Kahneman-Tversky optimisation on unpaired examples",
        order=15,
        serves_as_lora=True,
        trainer="KTOTrainer",
        data="unpaired",
        reference="policy",
        loss_types=("kto", "apo_zero_unpaired"),
    ),
    MethodSpec(
        "reward",
        "preference",
        "preference.weights",
        "a reward model: a scoring head trained on pairs",
        order=16,
        serving_note="models score texts and generate none (their scoring head is a module to save, which vLLM's "
        "LoRA serving refuses)",
        trainer="RewardTrainer",
        data="pairs",
        head="reward",
    ),
    MethodSpec(
        "grpo",
        "preference",
        "preference.weights",
        "group-relative policy optimisation on sampled answers",
        order=17,
        serves_as_lora=True,
        trainer="GRPOTrainer",
        data="prompts",
        reference="unless beta 0",
        loss_types=("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "vespo"),
        loss_types_left_out={"luspo": "TRL's importance_sampling_level sequence"},
    ),
)
