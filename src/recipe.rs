//! The training recipe: a YAML file beside the model (`cnn.qat` → `cnn.yaml`)
//! saying which data to use and how to train, calibrate and fine-tune.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codes;
use crate::diagnostics::{render_terminal, Diagnostic, SourceFile, Span};

/// The default recipe with a comment on every key: what `qatc recipe` prints and what
/// `qatc build` uses when a model has no recipe. Its values are the serde defaults
/// below (a test keeps the two the same).
pub const DEFAULT_RECIPE: &str = r#"# qatc's default training recipe: what `qatc build` uses when a model has no recipe
# beside it. Save it as <model>.yaml (`qatc recipe --out model.yaml`), edit, build again.
# Every key may be left out; it then takes the value shown here. A recipe without a
# `train:` section trains nothing (load, calibrate, evaluate; QAT only with a `qat:` section).
data:
  format: idx                               # idx, folder (dir/<class>/*.png|jpg|…), cifar or numpy (.npz)
  # dir: /usr/share/datasets/fashion-mnist  # the data; for idx the default is $QATC_FASHION_MNIST, else Debian's path
  # val_split: 0.2                          # folder without train/ and val/: share held out for validation
  # classes: [0, 1, 2, 3, 4]                # keep only these classes; default: all of them
  # train_limit: 5000                       # use at most this many training images; default: all
  # test_limit: 1000                        # evaluate on at most this many test images; default: all
  skip_bad: false                            # true: leave out (and count) images that do not decode
  # normalize: {mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}  # per channel, x = (pixel/255 - mean) / std; kept in every artifact
train:                     # float training
  epochs: 3                # 0: no float training (PTQ of pretrained weights: load, calibrate, evaluate)
  batch_size: 64
  optimizer: adam          # adam, or sgd (momentum 0.9)
  learning_rate: 0.001
  seed: 0                  # the same seed gives the same numbers
  # augment: {flip: true, crop_padding: 4, resized_crop: [0.6, 1.0]}  # training images only; none by default
qat:                       # fine-tuning with fake quantization (the control trains as long in float)
  epochs: 1                # 0: no QAT or control training (the QAT stage is then calibration only)
  learning_rate: 0.0001
  weight_range: mse        # min_max or mse: how weight ranges are chosen each step
  learn_ranges: false      # learn the scales (LSQ-style) instead of observing them
  range_learning_rate: 0.001
  freeze_bn_after: 0.0     # epochs before batch norm statistics freeze (0: frozen from the start)
  # freeze_observers_after: 0.5  # epochs after which activation observers stop; default: never
  init_observer: mse       # min_max, percentile or mse: how QAT's starting activation ranges are calibrated
ptq:                       # post-training calibration
  calibration_samples: 1000  # training images the activation ranges are observed on
  observer: min_max        # min_max, percentile or mse
  percentile: 99.99        # kept by `observer: percentile`
  weight_range: min_max    # min_max or mse
# transfer:                # start from pretrained weights; see examples/fashion/transfer.yaml
#   weights: ../../build/FashionBackbone/float.safetensors
#   freeze: [stem]
"#;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub qat: QatConfig,
    #[serde(default)]
    pub ptq: PtqConfig,
    /// Transfer learning: start from pretrained weights, freeze some layers.
    #[serde(default)]
    pub transfer: Option<TransferConfig>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TransferConfig {
    /// A safetensors file (relative to the recipe), e.g. another build's float.safetensors.
    pub weights: PathBuf,
    /// A .qat model (relative to the recipe) whose `qatc build` produces `weights` when
    /// the file is missing; its own recipe sits beside it.
    pub build: Option<PathBuf>,
    /// Renames: our tensor name → the name in the weight file.
    #[serde(default)]
    pub map: std::collections::BTreeMap<String, String>,
    /// Layers not loaded (a new head, trained from scratch).
    #[serde(default)]
    pub skip: Vec<String>,
    /// Layers (binding names) whose parameters and statistics do not change.
    #[serde(default)]
    pub freeze: Vec<String>,
    /// Train the frozen layers again in the control and QAT stages (float training keeps
    /// them frozen): QAT can then adapt the backbone to its quantization.
    #[serde(default)]
    pub unfreeze_for_qat: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// How the files under `dir` are laid out: idx (default), folder, cifar or numpy.
    #[serde(default)]
    pub format: crate::data::Format,
    /// The data (relative to the recipe); for idx it defaults to $QATC_FASHION_MNIST or
    /// Debian's Fashion-MNIST.
    pub dir: Option<PathBuf>,
    /// For an image folder without train/ and val/ subfolders: the share of images
    /// held out for validation (chosen by a hash of `train.seed` and each path).
    pub val_split: Option<f64>,
    /// Keep only these classes (labels are remapped to 0..n in this order).
    pub classes: Option<Vec<u8>>,
    /// Use at most this many training images (after the class filter).
    pub train_limit: Option<usize>,
    /// Evaluate on at most this many test images.
    pub test_limit: Option<usize>,
    /// Per-channel normalization of `pixel / 255`, used in training, calibration and
    /// evaluation and stored in the int8 artifact (whose exports take raw pixels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<crate::preprocess::Normalize>,
    /// Leave out (and count) images that do not decode instead of stopping the build.
    #[serde(default)]
    pub skip_bad: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    Adam,
    Sgd,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_optimizer")]
    pub optimizer: Optimizer,
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    #[serde(default)]
    pub seed: u64,
    /// Augmentation of training batches (float, control and QAT training; never
    /// calibration or evaluation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<AugmentConfig>,
}

/// Random changes to each training image, seeded by `train.seed`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Mirror left-right with probability 1/2.
    #[serde(default)]
    pub flip: bool,
    /// Pad by this many pixels and cut a random window of the input size.
    #[serde(default)]
    pub crop_padding: usize,
    /// Crop a random share of the area in [lo, hi] (aspect 3/4 to 4/3) and scale it back.
    #[serde(default)]
    pub resized_crop: Option<[f64; 2]>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: default_epochs(),
            batch_size: default_batch_size(),
            optimizer: default_optimizer(),
            learning_rate: default_lr(),
            seed: 0,
            augment: None,
        }
    }
}

impl Default for Recipe {
    /// The recipe of a model without one: [`DEFAULT_RECIPE`].
    fn default() -> Self {
        Recipe {
            data: DataConfig::default(),
            train: TrainConfig::default(),
            qat: QatConfig::default(),
            ptq: PtqConfig::default(),
            transfer: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QatConfig {
    #[serde(default = "one")]
    pub epochs: usize,
    #[serde(default = "default_qat_lr")]
    pub learning_rate: f64,
    /// How weight ranges are chosen each step.
    #[serde(default = "mse")]
    pub weight_range: WeightRangeKind,
    /// Learn scales (LSQ-style) for weights and activations instead of observing them.
    #[serde(default)]
    pub learn_ranges: bool,
    /// Learning rate of the learned ranges (they live on a log scale).
    #[serde(default = "default_range_lr")]
    pub range_learning_rate: f64,
    /// QAT epochs (fractions allowed) during which BatchNorm still uses batch statistics,
    /// with the folded weights corrected; after that its statistics freeze. 0: frozen from the start.
    #[serde(default)]
    pub freeze_bn_after: f64,
    /// QAT epochs after which moving-average activation observers stop moving.
    #[serde(default)]
    pub freeze_observers_after: Option<f64>,
    /// How the activation ranges QAT starts from are calibrated (PTQ's own stay as
    /// `ptq.observer` says, so the baseline is the standard one).
    #[serde(default = "mse_observer")]
    pub init_observer: ObserverKind,
}

impl Default for QatConfig {
    fn default() -> Self {
        QatConfig {
            epochs: 1,
            learning_rate: default_qat_lr(),
            weight_range: WeightRangeKind::Mse,
            learn_ranges: false,
            range_learning_rate: default_range_lr(),
            freeze_bn_after: 0.0,
            freeze_observers_after: None,
            init_observer: ObserverKind::Mse,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PtqConfig {
    #[serde(default = "default_calibration")]
    pub calibration_samples: usize,
    /// How activation ranges are calibrated.
    #[serde(default)]
    pub observer: ObserverKind,
    /// For `observer: percentile`: the percentile kept (the same share is clipped at the bottom).
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    #[serde(default)]
    pub weight_range: WeightRangeKind,
}

impl Default for PtqConfig {
    fn default() -> Self {
        PtqConfig {
            calibration_samples: default_calibration(),
            observer: ObserverKind::MinMax,
            percentile: default_percentile(),
            weight_range: WeightRangeKind::MinMax,
        }
    }
}

impl PtqConfig {
    pub fn range_method(&self) -> RangeMethod {
        self.observer.method(self.percentile)
    }
}

impl ObserverKind {
    pub fn method(self, percentile: f64) -> RangeMethod {
        match self {
            ObserverKind::MinMax => RangeMethod::MinMax,
            ObserverKind::Percentile => RangeMethod::Percentile(percentile),
            ObserverKind::Mse => RangeMethod::Mse,
        }
    }
}

/// Activation calibration as written in a recipe.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ObserverKind {
    #[default]
    MinMax,
    Percentile,
    Mse,
}

/// How a calibrated activation range is narrowed from the observed min and max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeMethod {
    MinMax,
    /// Keep this percentile (e.g. 99.99) at the top and its mirror at the bottom.
    Percentile(f64),
    /// The clipping that minimizes the quantization error on the calibration values.
    Mse,
}

/// Weight range choice as written in a recipe.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WeightRangeKind {
    #[default]
    MinMax,
    Mse,
}

fn default_epochs() -> usize {
    3
}
fn default_lr() -> f64 {
    1e-3
}
fn default_batch_size() -> usize {
    64
}
fn default_optimizer() -> Optimizer {
    Optimizer::Adam
}
fn one() -> usize {
    1
}
fn default_qat_lr() -> f64 {
    1e-4
}
fn default_calibration() -> usize {
    1000
}
fn default_percentile() -> f64 {
    99.99
}
fn default_range_lr() -> f64 {
    1e-3
}
fn mse_observer() -> ObserverKind {
    ObserverKind::Mse
}
fn mse() -> WeightRangeKind {
    WeightRangeKind::Mse
}

/// A recipe that could not be read, already rendered for the terminal.
#[derive(Debug, thiserror::Error)]
#[error("{rendered}")]
pub struct RecipeError {
    pub rendered: String,
}

/// A recipe without a `train:` section is the PTQ workflow: load (transferred weights),
/// calibrate, evaluate, as `train.epochs: 0`; QAT runs only when a `qat:` section asks.
fn untrained_without_train_section(recipe: &mut Recipe, text: &str) {
    // The text parsed as a recipe, so it parses as YAML; `{}` stands for an empty file.
    let sections: serde_yaml::Value = serde_yaml::from_str(text).unwrap_or_default();
    let has = |section: &str| sections.get(section).is_some();
    if !has("train") {
        recipe.train.epochs = 0;
        if !has("qat") {
            recipe.qat.epochs = 0;
        }
    }
}

impl Recipe {
    /// The recipe path for a model file: the same name with `.yaml`.
    pub fn path_for(model: &Path) -> PathBuf {
        model.with_extension("yaml")
    }

    /// Reads a recipe; paths in it are made relative to the recipe's directory.
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|e| RecipeError {
            rendered: format!(
                "error: cannot read recipe {}: {e}\n  hint: `qatc build` reads the training recipe from a YAML file beside the model; pass another with --recipe",
                path.display()
            ),
        })?;
        let mut recipe = Self::parse(&path.display().to_string(), &text)?;
        let base = path.parent().unwrap_or(Path::new(""));
        if let Some(dir) = &mut recipe.data.dir {
            *dir = base.join(&*dir);
        }
        if let Some(t) = &mut recipe.transfer {
            t.weights = base.join(&t.weights);
            t.build = t.build.as_ref().map(|b| base.join(b));
        }
        Ok(recipe)
    }

    pub fn parse(name: &str, text: &str) -> Result<Recipe, RecipeError> {
        let file = SourceFile::new(name, text);
        let render = |d: Diagnostic| RecipeError {
            rendered: render_terminal(&file, &[d], false),
        };
        let recipe: Recipe = serde_yaml::from_str(text).map_err(|e| {
            let at = e.location().map_or(0, |l| l.index()).min(text.len());
            let end = text[at..].find('\n').map_or(text.len(), |n| at + n).max(at);
            let message = e.to_string();
            // serde_yaml appends " at line L column C"; the label shows the place instead.
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_string();
            render(
                Diagnostic::error(
                    codes::INVALID_RECIPE,
                    "invalid recipe",
                    Span::new(at, end),
                    message,
                )
                .with_help("see examples/fashion/cnn.yaml for a complete recipe"),
            )
        })?;
        let mut recipe = recipe;
        untrained_without_train_section(&mut recipe, text);
        recipe.validate().map_err(|(section, key, message)| {
            let span = key_span(text, section, key);
            render(Diagnostic::error(
                codes::INVALID_RECIPE,
                format!("invalid recipe: {section}.{key}"),
                span,
                message,
            ))
        })?;
        Ok(recipe)
    }

    fn validate(&self) -> Result<(), (&'static str, &'static str, String)> {
        let positive = |section, key, v: usize| {
            if v == 0 {
                Err((section, key, "must be at least 1".to_string()))
            } else {
                Ok(())
            }
        };
        let rate = |section, key, v: f64| {
            if v > 0.0 && v.is_finite() && v < 10.0 {
                Ok(())
            } else {
                Err((
                    section,
                    key,
                    format!("must be a positive learning rate, got {v}"),
                ))
            }
        };
        positive("train", "batch_size", self.train.batch_size)?;
        rate("train", "learning_rate", self.train.learning_rate)?;
        rate("qat", "learning_rate", self.qat.learning_rate)?;
        positive("ptq", "calibration_samples", self.ptq.calibration_samples)?;
        rate("qat", "range_learning_rate", self.qat.range_learning_rate)?;
        if !(50.0..=100.0).contains(&self.ptq.percentile) {
            return Err((
                "ptq",
                "percentile",
                format!("must be between 50 and 100, got {}", self.ptq.percentile),
            ));
        }
        if !(self.qat.freeze_bn_after >= 0.0 && self.qat.freeze_bn_after.is_finite()) {
            return Err((
                "qat",
                "freeze_bn_after",
                "must be a number of epochs, 0 or more".into(),
            ));
        }
        if self
            .qat
            .freeze_observers_after
            .is_some_and(|e| !(e >= 0.0 && e.is_finite()))
        {
            return Err((
                "qat",
                "freeze_observers_after",
                "must be a number of epochs, 0 or more".into(),
            ));
        }
        if let Some(classes) = &self.data.classes {
            if classes.is_empty() {
                return Err(("data", "classes", "must list at least one class".into()));
            }
            // Other formats have their own class counts, checked when the data is read.
            let fashion_mnist = self.data.format == crate::data::Format::Idx;
            if let Some(c) = classes.iter().find(|&&c| fashion_mnist && c > 9) {
                return Err((
                    "data",
                    "classes",
                    format!("class {c} is out of range: Fashion-MNIST classes are 0 to 9"),
                ));
            }
            let mut sorted = classes.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != classes.len() {
                return Err(("data", "classes", "lists a class twice".into()));
            }
        }
        if let Some(v) = self.data.val_split {
            if !(v > 0.0 && v < 1.0) {
                return Err((
                    "data",
                    "val_split",
                    format!("must be a share between 0 and 1 (e.g. 0.2), got {v}"),
                ));
            }
        }
        if self.data.dir.is_none() && self.data.format != crate::data::Format::Idx {
            return Err((
                "data",
                "format",
                "needs `data.dir`: only IDX data has a default (Fashion-MNIST)".into(),
            ));
        }
        if let Some(l) = self.data.train_limit {
            positive("data", "train_limit", l)?;
        }
        if let Some(l) = self.data.test_limit {
            positive("data", "test_limit", l)?;
        }
        if let Some([lo, hi]) = self.train.augment.as_ref().and_then(|a| a.resized_crop) {
            if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
                return Err((
                    "train",
                    "augment",
                    format!(
                        "resized_crop must be [lo, hi] with 0 < lo <= hi <= 1, got [{lo}, {hi}]"
                    ),
                ));
            }
        }
        if let Some(n) = &self.data.normalize {
            // The channel count is checked against the model when the data is read.
            n.check(n.mean.len())
                .map_err(|why| ("data", "normalize", why))?;
        }
        Ok(())
    }

    /// The data directory: the recipe's, else $QATC_FASHION_MNIST, else Debian's path.
    pub fn data_dir(&self) -> PathBuf {
        self.data
            .dir
            .clone()
            .or_else(|| std::env::var_os("QATC_FASHION_MNIST").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"))
    }
}

/// The span of `key:` inside `section:` in YAML text, or the start of the file.
fn key_span(text: &str, section: &str, key: &str) -> Span {
    let section_at = text.find(&format!("{section}:")).unwrap_or(0);
    match text[section_at..].find(&format!("{key}:")) {
        Some(i) => {
            let start = section_at + i;
            let end = text[start..].find('\n').map_or(text.len(), |n| start + n);
            Span::new(start, end)
        }
        None => Span::new(
            section_at,
            section_at + section.len().min(text.len() - section_at),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "train:\n  epochs: 2\n  learning_rate: 0.001\n";

    /// E0015's explanation names every key a recipe accepts (keys from a serialized
    /// recipe with every section, so a new field shows up here).
    #[test]
    fn e0015_explains_every_recipe_key() {
        let text = "transfer:\n  weights: w.safetensors\n".to_string() + GOOD;
        let recipe = Recipe::parse("r.yaml", &text).unwrap();
        let (_, explanation) = crate::codes::explain(codes::INVALID_RECIPE).unwrap();
        let tree = serde_yaml::to_value(&recipe).unwrap();
        let mut missing = Vec::new();
        for (section, fields) in tree.as_mapping().unwrap() {
            let section = section.as_str().unwrap();
            for key in fields.as_mapping().unwrap().keys() {
                let key = key.as_str().unwrap();
                if !explanation.contains(&format!("{section}.{key}")) {
                    missing.push(format!("{section}.{key}"));
                }
            }
        }
        assert!(missing.is_empty(), "E0015 does not name {missing:?}");
    }

    #[test]
    fn defaults_fill_in_optional_sections() {
        let r = Recipe::parse("r.yaml", GOOD).unwrap();
        assert_eq!(r.train.batch_size, 64);
        assert_eq!(r.qat.epochs, 1);
        assert_eq!(r.ptq.calibration_samples, 1000);
    }

    #[test]
    fn the_printed_default_recipe_is_the_default() {
        let printed = Recipe::parse("default.yaml", DEFAULT_RECIPE).unwrap();
        assert_eq!(printed, Recipe::default());
        // Every key left out takes the same value, but for the epochs: a recipe without
        // `train:` trains nothing.
        let mut untrained = Recipe::default();
        (untrained.train.epochs, untrained.qat.epochs) = (0, 0);
        assert_eq!(Recipe::parse("empty.yaml", "{}").unwrap(), untrained);
        // And every key of the serialized recipe is in the printed one (commented or not).
        let all = serde_json::to_value(Recipe::default()).unwrap();
        for (section, keys) in all.as_object().unwrap() {
            assert!(DEFAULT_RECIPE.contains(&format!("{section}:")), "{section}");
            for key in keys
                .as_object()
                .map(|k| k.keys().collect())
                .unwrap_or(Vec::new())
            {
                assert!(
                    DEFAULT_RECIPE.contains(&format!(" {key}:")),
                    "{section}.{key} is not in DEFAULT_RECIPE"
                );
            }
        }
    }

    #[test]
    fn unknown_keys_are_reported_with_their_line() {
        let err = Recipe::parse("r.yaml", "train:\n  epochs: 2\n  learning_rat: 0.1\n")
            .unwrap_err()
            .rendered;
        assert!(err.contains("unknown field `learning_rat`"), "{err}");
        assert!(err.contains("r.yaml:3:"), "{err}");
    }

    #[test]
    fn bad_values_point_at_their_key() {
        let err = Recipe::parse("r.yaml", "train:\n  epochs: 1\n  batch_size: 0\n")
            .unwrap_err()
            .rendered;
        assert!(
            err.contains("train.batch_size") && err.contains("r.yaml:3:3"),
            "{err}"
        );
        // No training at all is a build too: load, calibrate, evaluate.
        let r = Recipe::parse("r.yaml", "train:\n  epochs: 0\nqat:\n  epochs: 0\n").unwrap();
        assert_eq!((r.train.epochs, r.qat.epochs), (0, 0));
        let err = Recipe::parse(
            "r.yaml",
            "data:\n  classes: [1, 12]\ntrain:\n  epochs: 1\n  learning_rate: 0.1\n",
        )
        .unwrap_err()
        .rendered;
        assert!(err.contains("class 12 is out of range"), "{err}");
    }

    #[test]
    fn a_recipe_without_train_trains_nothing_and_qat_only_when_asked() {
        let epochs = |text: &str| {
            let r = Recipe::parse("r.yaml", text).unwrap();
            (r.train.epochs, r.qat.epochs)
        };
        assert_eq!(epochs(""), (0, 0));
        assert_eq!(epochs("data:\n  test_limit: 100\n"), (0, 0));
        assert_eq!(epochs("qat:\n  epochs: 2\n"), (0, 2));
        assert_eq!(epochs("qat:\n  learning_rate: 0.001\n"), (0, 1));
        // With a `train:` section, the defaults as before.
        assert_eq!(epochs("train:\n  learning_rate: 0.01\n"), (3, 1));
    }

    #[test]
    fn broken_yaml_is_an_error_not_a_panic() {
        let err = Recipe::parse("r.yaml", "train: [epochs: 1\n")
            .unwrap_err()
            .rendered;
        assert!(err.contains("invalid recipe"), "{err}");
    }
}
