//! One build's training, stage by stage: the driver starts a [`Session`] (data on the
//! device, checkpoints) and calls float, PTQ, control and QAT in order; each returns its
//! network, evaluated on the test set (by rank 0 alone in a data-parallel group).

use super::*;
/// A network after one training stage, with its test-set record.
pub struct Trained {
    pub net: Network,
    pub stage: Stage,
    /// The predicted class index of every test image.
    pub predictions: Vec<i64>,
}

/// The training of one build: its data on the device and its checkpoints. The driver
/// calls the stages in order (float, PTQ, control, QAT); each returns its network.
pub struct Session<'a> {
    graph: &'a Graph,
    run: Run<'a>,
    data: Prepared,
}

impl<'a> Session<'a> {
    /// Seeds libtorch, opens the checkpoints in `opts.out_dir` (fingerprinted by the graph
    /// and the recipe), removes what an interrupted build left there, and loads the data.
    pub fn start(
        graph: &'a Graph,
        recipe: &'a Recipe,
        opts: &'a TrainOptions,
    ) -> Result<Self, TrainError> {
        tch::manual_seed(recipe.train.seed as i64);
        let fingerprint = (
            crate::ir::dump::text(graph),
            serde_json::to_string(recipe).expect("recipes serialize"),
        );
        let (checkpoints, note) = Checkpoints::open(&opts.out_dir, fingerprint, opts.resume);
        let run = Run {
            recipe,
            progress: Progress { log: opts.log },
            opts,
            checkpoints: Some(std::cell::RefCell::new(checkpoints)),
        };
        if let Some(note) = note {
            run.say(&note);
        }
        let writes = opts.writes();
        for dir in [opts.out_dir.clone(), opts.out_dir.join("checkpoints")]
            .into_iter()
            .filter(|_| writes)
        {
            let removed = report::clean_stale(&dir);
            if !removed.is_empty() {
                run.say(&format!(
                    "removed what an interrupted build left in {}: {}",
                    dir.display(),
                    removed.join(", ")
                ));
            }
        }
        let data = prepare(graph, recipe, opts.device, opts.log)?;
        for note in &data.notes {
            run.say(note);
        }
        Ok(Session { graph, run, data })
    }

    /// Float training, from pretrained weights with frozen layers when transferring.
    pub fn float(&self) -> Result<Trained, TrainError> {
        let (run, data, recipe) = (&self.run, &self.data, self.run.recipe);
        let mut net = run.initial_network(self.graph)?;
        run.say(&format!(
            "{}: {} parameters, {} training images",
            self.graph.name,
            net.trainable_count(),
            data.train.len()
        ));
        let mut stage = run.train(
            "float",
            &mut net,
            &data.train,
            &data.test,
            Mode::Float,
            recipe.train.epochs,
            recipe.train.learning_rate,
        )?;
        let predictions;
        (stage.accuracy, predictions) = self.evaluate(
            "float",
            &mut net,
            &data.test,
            Mode::Float,
            &mut stage.eval_seconds,
        );
        Ok(Trained {
            net,
            stage,
            predictions,
        })
    }

    /// PTQ: `float` with ranges calibrated on training images, evaluated quantized.
    pub fn ptq(&self, float: &Network) -> Trained {
        let (run, data) = (&self.run, &self.data);
        let mut net = float.duplicate();
        let mut stage = Stage::default();
        calibrate(&mut net, &data.calibration, run.recipe);
        let predictions;
        (stage.accuracy, predictions) = self.evaluate(
            "PTQ",
            &mut net,
            &data.test,
            Mode::Quantized,
            &mut stage.eval_seconds,
        );
        Trained {
            net,
            stage,
            predictions,
        }
    }

    /// The control run: the QAT epochs spent in float instead, then PTQ; what QAT is compared with.
    pub fn control(&self, float: &Network) -> Result<Stage, TrainError> {
        let (run, data, recipe) = (&self.run, &self.data, self.run.recipe);
        let mut control = float.duplicate();
        if unfreezes_for_qat(recipe) {
            control.unfreeze();
        }
        let mut stage = run.train(
            "control",
            &mut control,
            &data.train,
            &data.test,
            Mode::Float,
            recipe.qat.epochs,
            recipe.qat.learning_rate,
        )?;
        calibrate(&mut control, &data.calibration, recipe);
        stage.accuracy = run
            .evaluate(
                "control",
                &mut control,
                &data.test,
                Mode::Quantized,
                &mut stage.eval_seconds,
            )
            .0;
        Ok(stage)
    }

    /// QAT: fine-tunes `ptq` with fake quantization, starting from its calibrated ranges.
    pub fn qat(&self, ptq: &Network) -> Result<Trained, TrainError> {
        let (run, data, recipe) = (&self.run, &self.data, self.run.recipe);
        let mut net = ptq.duplicate();
        if unfreezes_for_qat(recipe) {
            net.unfreeze();
        }
        net.quant = QuantState {
            weight_range: weight_range(recipe.qat.weight_range),
            bn_frozen: recipe.qat.freeze_bn_after == 0.0,
            observers_frozen: recipe.qat.freeze_observers_after == Some(0.0),
            calibration: RangeMethod::MinMax,
        };
        let init = recipe.qat.init_observer.method(recipe.ptq.percentile);
        if init != recipe.ptq.range_method() {
            calibrate_with(&mut net, &data.calibration, init);
        }
        if recipe.qat.learn_ranges {
            net.learn_ranges();
        }
        let mut stage = run.train(
            "QAT",
            &mut net,
            &data.train,
            &data.test,
            Mode::Quantized,
            recipe.qat.epochs,
            recipe.qat.learning_rate,
        )?;
        let predictions;
        (stage.accuracy, predictions) = self.evaluate(
            "QAT",
            &mut net,
            &data.test,
            Mode::Quantized,
            &mut stage.eval_seconds,
        );
        Ok(Trained {
            net,
            stage,
            predictions,
        })
    }

    /// Accuracy and predictions on the test set; in a data-parallel group only rank 0
    /// evaluates (the others get nothing: they write and report nothing).
    fn evaluate(
        &self,
        stage: &str,
        net: &mut Network,
        test: &Batches,
        mode: Mode,
        seconds: &mut f64,
    ) -> (f64, Vec<i64>) {
        if self.run.opts.writes() {
            self.run.evaluate(stage, net, test, mode, seconds)
        } else {
            (0.0, Vec::new())
        }
    }

    /// Shows one line of progress.
    pub fn say(&self, line: &str) {
        self.run.say(line);
    }

    /// The test images as bytes, for the int8 runtime.
    pub fn test_images(&self) -> &Images {
        &self.data.test_set
    }

    /// The dataset's class indices this build keeps, in output order.
    pub fn classes(&self) -> &[u8] {
        &self.data.classes
    }

    /// The names of [`Session::classes`], in order.
    pub fn class_names(&self) -> &[String] {
        &self.data.class_names
    }

    /// Where the data came from and how many images each use had, for the report.
    pub fn data_summary(&self) -> DataSummary {
        let data = &self.data;
        DataSummary {
            dir: data.dir.display().to_string(),
            classes: data.classes.clone(),
            class_names: data.class_names.clone(),
            train_images: data.train.len() as usize,
            test_images: data.test.len() as usize,
            calibration_images: data.calibration.len() as usize,
        }
    }

    /// `counts[true][predicted]` over the test set.
    pub fn confusion(&self, predictions: &[i64]) -> Vec<Vec<u64>> {
        confusion(&self.data.test, predictions, self.data.classes.len())
    }
}
