"""Site policy files and the study's [governance] section: bad files named key by key; every violation listed."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from fedneuro.governance.keys import fingerprint, generate_signing_key, load_public_key, write_signing_key
from fedneuro.governance.policy import (
    AllowedBackbone,
    SitePolicy,
    SitePolicyError,
    check_study_against_policy,
    load_site_policy,
)
from fedneuro.governance.site import SiteConfig
from fedneuro.study import Study, StudyFileError, default_study_path, load_study, parse_study

TODAY = date(2026, 6, 1)
HASH = "ab" * 32


@pytest.fixture(scope="module")
def demo() -> Study:
    return load_study(default_study_path())


def _permissive() -> SitePolicy:
    return SitePolicy(accepted_purposes=["HMB"], max_epsilon_per_study=10.0)


def _with(study: Study, **sections: dict) -> Study:
    """A copy of ``study`` with some settings changed, re-validated like a study file."""
    data = study.model_dump(mode="json")
    for section, values in sections.items():
        target = data
        *path, last = section.split(".")
        for part in path:
            target = target[part]
        target[last] = {**target[last], **values} if isinstance(target[last], dict) else values
    return Study.model_validate(data)


def test_demo_studies_declare_governance_and_round_trip() -> None:
    for modality in ("eeg", "mri"):
        study = load_study(default_study_path(modality))  # type: ignore[arg-type]
        assert study.governance is not None and study.governance.purpose.permission == "HMB"
        assert study.governance.purpose.ethics is not None
        assert Study.from_json(study.to_json()) == study
    eeg = load_study(default_study_path())
    changed = _with(eeg, **{"governance": {"max_epsilon": 7.5}})
    assert changed.digest() != eeg.digest()


def test_a_study_without_governance_still_loads() -> None:
    study = parse_study('[study]\nid = "x"\n', source="old.toml")
    assert study.governance is None
    assert Study.from_json(study.to_json()) == study


_GOV = """[study]
id = "x"
[governance]
requesting_institution = "Charite"
max_epsilon = {eps}
min_cohort = {cohort}
min_participants_per_metric = 10
allowed_outputs = {outputs}
[governance.purpose]
permission = "{permission}"
"""


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"outputs": '["adapter-tensors", "raw-eeg"]'}, r"\[governance\] allowed_outputs: .*unknown output\(s\) \['raw-eeg'\]; allowed outputs are adapter-tensors, aggregate-metrics"),
        ({"outputs": '["adapter-tensors", "adapter-tensors"]'}, r"lists an output twice"),
        ({"eps": "0"}, r"\[governance\] max_epsilon: Input should be greater than 0 \(got 0\)"),
        ({"cohort": "5"}, r"min_participants_per_metric \(10\) exceeds min_cohort \(5\)"),
        ({"permission": "DS"}, r"\[governance\] purpose: .*permission DS .*needs a disease id"),
        ({"permission": "XYZ"}, r"\[governance.purpose\] permission: Input should be 'GRU', 'HMB', 'DS' or 'POA'"),
    ],
)
def test_bad_governance_sections_name_the_key(values: dict[str, str], message: str) -> None:
    fields = {"eps": "8.0", "cohort": "20", "outputs": '["adapter-tensors"]', "permission": "HMB", **values}
    with pytest.raises(StudyFileError, match=message):
        parse_study(_GOV.format(**fields), source="bad.toml")


def test_governance_needs_its_declarations() -> None:
    with pytest.raises(StudyFileError, match=r"\[governance\] requesting_institution: Field required"):
        parse_study('[study]\nid = "x"\n[governance]\nmax_epsilon = 1\n', source="bad.toml")


# -- policy files


def test_policy_file_loads_and_resolves_key_paths(tmp_path: Path) -> None:
    (tmp_path / "kit").mkdir()
    public = write_signing_key(tmp_path / "kit" / "coordinator.key", generate_signing_key())
    path = tmp_path / "policy.toml"
    path.write_text(
        'accepted_purposes = ["HMB", "DS:MONDO:0005027", "DUO:0000042"]\n'
        "max_epsilon_per_study = 6.0\nmin_participants = 30\nrequire_secure_aggregation = true\n"
        'trusted_coordinator_keys = ["kit/coordinator.pub"]\n'
        '[[allowed_backbones]]\nbackbone = "biot-small"\nweights_sha256 = "random-init"\n'
        f'[[allowed_backbones]]\nbackbone = "labram-base"\nweights_sha256 = "{HASH}"\n',
        encoding="utf-8",
    )
    policy = load_site_policy(path)
    assert [str(t) for t in policy.accepted_purposes] == ["HMB", "DS:MONDO:0005027", "GRU"]
    assert policy.trusted_coordinator_keys == [tmp_path / "kit" / "coordinator.pub"]
    assert [fingerprint(k) for k in policy.trusted_keys()] == [fingerprint(load_public_key(public))]
    assert policy.require_dp and policy.min_participants == 30
    assert policy.allowed_backbones[1] == AllowedBackbone(backbone="labram-base", weights_sha256=HASH)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_epsilon_per_studyy = 4.0\n", r"max_epsilon_per_studyy: unknown key \(check the spelling; known keys: max_epsilon_per_study, "),
        ('accepted_purposes = ["HBM"]\n', r"accepted_purposes\[0\]: unknown DUO term 'HBM'; known codes: NRES, GRU, HMB"),
        ('accepted_purposes = ["hmb"]\n', r"did you mean 'HMB'\?"),
        ('accepted_purposes = ["DS"]\n', r"accepted_purposes\[0\]: DUO term 'DS': DS \(disease specific research\) needs a disease id"),
        ('accepted_purposes = ["NCU"]\n', r"accepted_purposes: 'NCU' \(non-commercial use only\) is a modifier, not a purpose a study declares"),
        ('accepted_purposes = ["NRES"]\n', r"'NRES' \(no restriction\) is a consent permission, not a purpose"),
        ('min_participants = "ten"\n', r"min_participants: Input should be a valid integer.*\(got 'ten'\)"),
        ("require_dp = 3\n", r"require_dp: Input should be a valid boolean \(got 3\)"),
        ("max_epsilon_per_study = 5\nmax_epsilon_lifetime = 2\n", r"max_epsilon_lifetime \(2.0\) is below max_epsilon_per_study \(5.0\)"),
        ('[[allowed_backbones]]\nbackbone = "gpt"\nweights_sha256 = "random-init"\n', r"allowed_backbones\[0\].backbone: Invalid value for the 'backbone' parameter: 'gpt'"),
        ('[[allowed_backbones]]\nbackbone = "biot-small"\nweights_sha256 = "abc"\n', r"allowed_backbones\[0\].weights_sha256: 'abc' is neither a sha256"),
        ('[[allowed_backbones]]\nbackbone = "biot-small"\n', r"allowed_backbones\[0\].weights_sha256: Field required"),
        ('trusted_coordinator_keys = ["nope.pub"]\n', r"trusted_coordinator_keys\[0\]: .*nope.pub: public key file not found; point it at the coordinator's signing public key"),
        ("accepted_purposes = [\n", r"is not valid TOML"),
    ],
)
def test_bad_policy_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SitePolicyError, match=message) as caught:
        load_site_policy(path)
    assert str(path) in str(caught.value)


def test_every_bad_key_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text('colour = "red"\nmin_participants = 0\naccepted_purposes = ["HBM"]\n', encoding="utf-8")
    with pytest.raises(SitePolicyError, match=r"3 invalid policy setting\(s\)"):
        load_site_policy(path)


def test_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SitePolicyError, match=r"cannot read site policy .*absent.toml"):
        load_site_policy(tmp_path / "absent.toml")


def test_site_config_keeps_its_defaults_and_takes_a_signing_key(tmp_path: Path) -> None:
    site = SiteConfig(name="a", bids_root=tmp_path, state_dir=tmp_path)
    assert site.signing_key is None and site.policy == SitePolicy() and site.policy.accepted_purposes == []
    site = SiteConfig.model_validate({"name": "a", "bids_root": "d", "state_dir": "s", "signing_key": "kit/signing.key",
                                      "policy": {"accepted_purposes": ["HMB"]}})
    assert site.signing_key == Path("kit/signing.key")


# -- checking a study against a policy


def test_a_permitted_study_has_no_violations(demo: Study) -> None:
    assert check_study_against_policy(demo, _permissive(), weights_sha256=None, today=TODAY, eligible_participants=80) == []


def test_every_violation_is_listed(demo: Study) -> None:
    study = _with(
        demo,
        **{"governance": {"max_epsilon": 12.0}, "privacy": {"unit": "window"},
           "federation.secure_aggregation": {"enabled": False}},
    )
    policy = SitePolicy(
        accepted_purposes=["GRU", "DS:MONDO:0005027"], max_epsilon_per_study=6.0, min_participants=50,
        require_secure_aggregation=True,
        allowed_backbones=[AllowedBackbone(backbone="biot-small", weights_sha256=HASH)],
    )
    problems = check_study_against_policy(study, policy, weights_sha256=None, today=date(2031, 1, 1),
                                          eligible_participants=12)
    expected = [
        r"the study's purpose HMB is not among this site's accepted_purposes \(GRU, DS:MONDO:0005027\)",
        r"ethics approval DEMO-IRB-2025-001 is valid 2025-01-01 to 2030-12-31, not on 2031-01-01",
        r"up to ε = 12 at this site \(\[governance\] max_epsilon\), above this site's max_epsilon_per_study = 6",
        r"this site has 12 eligible participant\(s\); the study needs at least min_cohort = 20 per site",
        r"this site has 12 eligible participant\(s\), below its policy's min_participants = 50",
        r"\[privacy\] unit is 'window': this site's policy requires participant-level DP",
        r"requires secure aggregation, but the study's \[federation.secure_aggregation\] enabled is false",
        r"backbone biot-small with weights random-init is not among this site's allowed_backbones: biot-small \(sha256 abababababab…\)",
    ]
    assert len(problems) == len(expected), problems
    for pattern, problem in zip(expected, problems):
        assert re.search(pattern, problem), (pattern, problem)


def test_window_level_dp_is_allowed_when_the_site_does_not_require_dp(demo: Study) -> None:
    study = _with(demo, **{"privacy": {"unit": "window"}})
    policy = _permissive().model_copy(update={"require_dp": False})
    assert check_study_against_policy(study, policy, weights_sha256=None) == []


def test_disease_specific_purposes_match_exactly(demo: Study) -> None:
    epilepsy = _with(demo, **{"governance.purpose": {"permission": "DS", "disease": "mondo:0005027"}})
    accepts = SitePolicy(accepted_purposes=["DS:MONDO:0005027"])
    assert check_study_against_policy(epilepsy, accepts, weights_sha256=None) == []
    other = SitePolicy(accepted_purposes=["DS:MONDO:0004975", "HMB"])
    (problem,) = check_study_against_policy(epilepsy, other, weights_sha256=None)
    assert "purpose DS:mondo:0005027 is not among this site's accepted_purposes (DS:MONDO:0004975, HMB)" in problem


def test_an_empty_policy_accepts_no_purpose(demo: Study) -> None:
    (problem,) = check_study_against_policy(demo, SitePolicy(), weights_sha256=None)
    assert "accepted_purposes (none)" in problem


def test_allowed_backbones_bind_the_weights(demo: Study) -> None:
    policy = _permissive().model_copy(update={"allowed_backbones": [AllowedBackbone(backbone="biot-small", weights_sha256=HASH)]})
    assert check_study_against_policy(demo, policy, weights_sha256=HASH) == []
    (problem,) = check_study_against_policy(demo, policy, weights_sha256="cd" * 32)
    assert "weights sha256 cdcdcdcdcdcd… is not among" in problem


def test_a_study_without_governance_cannot_pass() -> None:
    study = parse_study('[study]\nid = "x"\n', source="old.toml")
    problems = check_study_against_policy(study, _permissive(), weights_sha256=None)
    assert problems == [
        "the study has no [governance] section: its purpose, requesting institution, ε cap and outputs are undeclared; "
        "ask the coordinator to add one (see `fedneuro study template`)"
    ]
