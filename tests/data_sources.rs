//! Data sources other than IDX, on small data written here (synthetic images, not a
//! real data set): image folders in every supported encoding, CIFAR binary batches and
//! NumPy arrays, each fitted to the model input; broken files named in errors; and one
//! tiny end-to-end build on a folder of colour images.

mod common;

use std::path::Path;

use image::{DynamicImage, ImageBuffer, Luma, Rgb, Rgba};
use npyz::WriterBuilder;
use qatc::data::{self, Format};

/// A solid image of `colour` in the encoding the extension names.
fn save_solid(path: &Path, w: u32, h: u32, colour: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let rgb = ImageBuffer::from_pixel(w, h, Rgb(colour));
    let image = match path.extension().unwrap().to_str().unwrap() {
        // RGBA, and 16-bit grey, to exercise the conversions.
        "bmp" => DynamicImage::ImageRgba8(ImageBuffer::from_fn(w, h, |_, _| {
            Rgba([colour[0], colour[1], colour[2], 255])
        })),
        "png" if colour[0] == colour[1] && colour[1] == colour[2] => DynamicImage::ImageLuma16(
            ImageBuffer::from_pixel(w, h, Luma([colour[0] as u16 * 257])),
        ),
        _ => DynamicImage::ImageRgb8(rgb),
    };
    image.save(path).unwrap();
}

#[test]
fn image_folders_with_train_and_val_are_read_in_every_encoding_and_fitted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Class names sort as: blue, grey, red.
    save_solid(&root.join("train/red/a.png"), 40, 30, [250, 0, 0]);
    save_solid(&root.join("train/red/b.JPG"), 20, 20, [250, 0, 0]);
    save_solid(&root.join("train/blue/c.bmp"), 17, 33, [0, 0, 250]);
    save_solid(&root.join("train/grey/d.png"), 16, 16, [100, 100, 100]);
    save_solid(&root.join("train/grey/e.webp"), 9, 12, [100, 100, 100]);
    std::fs::write(root.join("train/grey/notes.txt"), "not an image").unwrap();
    save_solid(&root.join("val/red/f.png"), 16, 16, [250, 0, 0]);

    let sets = data::load(Format::Folder, root, &[3, 16, 16], 0.2, 0).unwrap();
    assert_eq!(sets.class_names, ["blue", "grey", "red"]);
    // Classes come interleaved in a seeded order (so limits take every class).
    let mut labels = sets.train.labels.clone();
    labels.sort();
    assert_eq!(labels, [0, 1, 1, 2, 2]);
    assert_eq!(sets.test.labels, [2]);
    assert_eq!(
        (sets.train.channels, sets.train.rows, sets.train.cols),
        (3, 16, 16)
    );
    let of = |label: u8| -> Vec<&[u8]> {
        (0..sets.train.len())
            .filter(|&i| sets.train.labels[i] == label)
            .map(|i| sets.train.image(i))
            .collect()
    };
    // A solid colour stays that colour through decoding, resizing and cropping
    // (JPEG within its rounding), planes in R, G, B order.
    let reds = of(2);
    assert!(
        reds.iter()
            .any(|r| r[..256].iter().all(|&v| v == 250) && r[256..].iter().all(|&v| v == 0)),
        "the red PNG is exact"
    );
    assert!(reds
        .iter()
        .all(|r| r[..256].iter().all(|&v| v.abs_diff(250) <= 8)));
    let blue = of(0)[0];
    assert!(blue[512..].iter().all(|&v| v == 250) && blue[..512].iter().all(|&v| v == 0));

    // The same folder for a grey model: one channel.
    let grey = data::load(Format::Folder, root, &[1, 8, 8], 0.2, 0).unwrap();
    assert_eq!(grey.train.image_len(), 64);
    let grey_image = (0..grey.train.len())
        .find(|&i| grey.train.labels[i] == 1)
        .unwrap();
    assert!(grey.train.image(grey_image).iter().all(|&v| v == 100));
}

/// A folder is listed class by class; `train_limit` (the first N images) must still see
/// every class, so the images come in a seeded, mixed order.
#[test]
fn the_first_images_of_a_folder_come_from_every_class() {
    let tmp = tempfile::tempdir().unwrap();
    for class in ["a", "b", "c", "d"] {
        for i in 0..30 {
            save_solid(
                &tmp.path().join(format!("train/{class}/{i}.png")),
                4,
                4,
                [9; 3],
            );
        }
        save_solid(&tmp.path().join(format!("val/{class}/x.png")), 4, 4, [9; 3]);
    }
    let sets = data::load(Format::Folder, tmp.path(), &[1, 4, 4], 0.2, 0).unwrap();
    let first = sets.train.select(None, Some(20));
    for label in 0..4u8 {
        assert!(first.labels.contains(&label), "{:?}", first.labels);
    }
    let again = data::load(Format::Folder, tmp.path(), &[1, 4, 4], 0.2, 0).unwrap();
    assert_eq!(again.train.labels, sets.train.labels, "reproducible");
}

#[test]
fn one_folder_is_split_reproducibly_by_the_seed() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..40 {
        let class = if i % 2 == 0 { "cat" } else { "dog" };
        save_solid(
            &tmp.path().join(format!("{class}/{i}.png")),
            4,
            4,
            [i as u8, 0, 0],
        );
    }
    let split = |seed| {
        let s = data::load(Format::Folder, tmp.path(), &[3, 4, 4], 0.25, seed).unwrap();
        (s.train.pixels, s.test.pixels)
    };
    let (train, val) = split(7);
    assert_eq!((train.len() + val.len()) / 48, 40);
    assert!(
        !val.is_empty() && val.len() < train.len(),
        "{} held out",
        val.len() / 48
    );
    assert_eq!(
        split(7),
        (train.clone(), val.clone()),
        "same seed, same split"
    );
    assert_ne!(split(8).1, val, "another seed, another split");
}

#[test]
fn broken_images_and_stray_classes_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    save_solid(&root.join("train/a/ok.png"), 4, 4, [1, 2, 3]);
    // A second class: a folder with one class is refused before any image is decoded.
    save_solid(&root.join("train/b/ok.png"), 4, 4, [3, 2, 1]);
    std::fs::write(
        root.join("train/a/broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    save_solid(&root.join("test/a/ok.png"), 4, 4, [1, 2, 3]);
    let err = data::load(Format::Folder, root, &[3, 4, 4], 0.2, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broken.png") && err.contains("not a readable image"),
        "{err}"
    );

    std::fs::remove_file(root.join("train/a/broken.png")).unwrap();
    save_solid(&root.join("test/zebra/z.png"), 4, 4, [1, 2, 3]);
    let err = data::load(Format::Folder, root, &[3, 4, 4], 0.2, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("zebra") && err.contains("not among the training classes"),
        "{err}"
    );

    let err = data::load(Format::Folder, root, &[784], 0.2, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[C, H, W]"), "{err}");
}

/// CIFAR-10 records: a label byte, then 1024 red, 1024 green and 1024 blue bytes.
fn cifar_batch(labels: &[u8]) -> Vec<u8> {
    labels
        .iter()
        .flat_map(|&l| {
            std::iter::once(l)
                .chain(std::iter::repeat_n(10 * l, 1024))
                .chain(std::iter::repeat_n(20 + l, 1024))
                .chain(std::iter::repeat_n(200, 1024))
        })
        .collect()
}

#[test]
fn cifar_batches_are_read_with_their_class_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("data_batch_1.bin"), cifar_batch(&[3, 1])).unwrap();
    std::fs::write(dir.join("data_batch_2.bin"), cifar_batch(&[9])).unwrap();
    std::fs::write(dir.join("test_batch.bin"), cifar_batch(&[0])).unwrap();
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    std::fs::write(dir.join("batches.meta.txt"), names).unwrap();

    let sets = data::load(Format::Cifar, dir, &[3, 32, 32], 0.2, 0).unwrap();
    assert_eq!(sets.class_names.len(), 10);
    assert_eq!(sets.class_names[3], "cat");
    assert_eq!(sets.train.labels, [3, 1, 9]);
    assert_eq!(sets.train.image(0)[0], 30);
    assert_eq!(sets.train.image(0)[1024], 23);
    assert_eq!(sets.train.image(0)[2048], 200);

    // For a grey 28x28 model: converted and resized.
    let grey = data::load(Format::Cifar, dir, &[1, 28, 28], 0.2, 0).unwrap();
    assert_eq!(grey.test.image_len(), 784);

    let bytes = std::fs::read(dir.join("data_batch_2.bin")).unwrap();
    std::fs::write(dir.join("data_batch_2.bin"), &bytes[..bytes.len() - 5]).unwrap();
    let err = data::load(Format::Cifar, dir, &[3, 32, 32], 0.2, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("data_batch_2.bin") && err.contains("truncated"),
        "{err}"
    );
}

fn write_npy<T: npyz::AutoSerialize + Copy>(path: &Path, shape: &[u64], values: &[T]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .unwrap();
    w.extend(values.iter().copied()).unwrap();
    w.finish().unwrap();
}

#[test]
fn numpy_arrays_are_read_from_npz_and_npy_files() {
    let tmp = tempfile::tempdir().unwrap();
    // An .npz as Keras saves mnist.npz: uint8 [N, H, W] images, integer labels.
    let npz = tmp.path().join("set.npz");
    {
        let file = std::fs::File::create(&npz).unwrap();
        let mut archive = npyz::npz::NpzWriter::new(file);
        let options = zip::write::FileOptions::default();
        let mut put_u8 = |name: &str, shape: &[u64], values: Vec<u8>| {
            let mut w = archive
                .array::<u8>(name, options)
                .unwrap()
                .default_dtype()
                .shape(shape)
                .begin_nd()
                .unwrap();
            w.extend(values).unwrap();
            w.finish().unwrap();
        };
        put_u8("x_train", &[2, 2, 3], (0..12).collect());
        put_u8("x_test", &[1, 2, 3], vec![7; 6]);
        let mut w = archive
            .array::<i64>("y_train", options)
            .unwrap()
            .default_dtype()
            .shape(&[2])
            .begin_nd()
            .unwrap();
        w.extend([4i64, 1]).unwrap();
        w.finish().unwrap();
        let mut w = archive
            .array::<i64>("y_test", options)
            .unwrap()
            .default_dtype()
            .shape(&[1, 1])
            .begin_nd()
            .unwrap();
        w.extend([4i64]).unwrap();
        w.finish().unwrap();
    }
    let sets = data::load(Format::Numpy, &npz, &[1, 2, 3], 0.2, 0).unwrap();
    assert_eq!(sets.train.labels, [4, 1]);
    assert_eq!(sets.train.image(1), &[6, 7, 8, 9, 10, 11]);
    assert_eq!(sets.class_names.len(), 5);

    // A directory of .npy files: float32 RGB in [0, 1].
    let dir = tmp.path().join("arrays");
    std::fs::create_dir(&dir).unwrap();
    let rgb: Vec<f32> = (0..2 * 2 * 3).map(|i| (i % 3) as f32 / 2.0).collect();
    write_npy(&dir.join("x_train.npy"), &[1, 2, 1, 3], &rgb[..6]);
    write_npy(&dir.join("y_train.npy"), &[1], &[0u8]);
    write_npy(&dir.join("x_test.npy"), &[1, 2, 1, 3], &rgb[6..]);
    write_npy(&dir.join("y_test.npy"), &[1], &[0u8]);
    let sets = data::load(Format::Numpy, &dir, &[3, 2, 1], 0.2, 0).unwrap();
    // Channel-major: R plane (0, 0), G plane (128, 128), B plane (255, 255).
    assert_eq!(sets.train.image(0), &[0, 0, 128, 128, 255, 255]);

    write_npy(&dir.join("x_test.npy"), &[1, 2, 1, 3], &[2.0f32; 6]);
    let err = data::load(Format::Numpy, &dir, &[3, 2, 1], 0.2, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("x_test.npy") && err.contains("[0, 1]"),
        "{err}"
    );
    write_npy(&dir.join("x_test.npy"), &[1, 2, 1, 3], &rgb[6..]);
    write_npy(&dir.join("y_test.npy"), &[2], &[0u8, 1]);
    let err = data::load(Format::Numpy, &dir, &[3, 2, 1], 0.2, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("y_test.npy") && err.contains("1 images"),
        "{err}"
    );
}

/// A whole build on a folder of colour images (red, green and blue squares with
/// noise, of varying sizes), through float, PTQ, QAT and the int8 runtime.
#[test]
fn a_model_trains_on_a_folder_of_colour_images() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    let mut state = 1u32;
    let mut noise = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 24) as u8 / 4
    };
    for (class, colour) in [("blue", 2), ("green", 1), ("red", 0)] {
        for i in 0..24 {
            let (w, h) = (12 + i % 5, 12 + i % 3);
            let image = ImageBuffer::from_fn(w, h, |_, _| {
                let mut px = [noise(), noise(), noise()];
                px[colour] = 180 + noise();
                Rgb(px)
            });
            let split = if i < 18 { "train" } else { "val" };
            let path = root.join(format!("{split}/{class}/{i}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            image.save(&path).unwrap();
        }
    }
    let model = common::write(
        tmp.path(),
        "colours.qat",
        "model Colours {\n    input image: f32[3, 8, 8]\n    let c = conv2d(image, filters = 4, kernel = 3)\n    let c = relu(c)\n    let p = global_avg_pool(c)\n    let logits = dense(p, units = 3)\n    output logits\n}\n",
    );
    common::write(
        tmp.path(),
        "colours.yaml",
        "data:\n  format: folder\n  dir: photos\ntrain:\n  epochs: 8\n  batch_size: 8\n  learning_rate: 0.05\nqat:\n  epochs: 1\n  learning_rate: 0.01\nptq:\n  calibration_samples: 30\n",
    );
    let out = tmp.path().join("build");
    let (stdout, stderr) = common::qatc_ok(&[
        "build",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let report = std::fs::read_to_string(out.join("report.json"))
        .unwrap_or_else(|e| panic!("{e}\n{stdout}\n{stderr}"));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let text = report.to_string();
    assert_eq!(report["data"]["train_images"], 54, "{text}");
    assert_eq!(report["data"]["test_images"], 18, "{text}");
    assert_eq!(
        report["data"]["class_names"],
        serde_json::json!(["blue", "green", "red"])
    );
    assert!(stdout.contains("classes [blue, green, red]"), "{stdout}");
    let float = report["float"]["accuracy"]
        .as_f64()
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        float > 0.9,
        "colours are easy: float accuracy {float}\n{text}"
    );
    // The int8 model, run by qatc's runtime on the same RGB images, agrees.
    let int8 = report["qat"]["int8_accuracy"]
        .as_f64()
        .unwrap_or_else(|| panic!("{text}"));
    assert!(int8 > 0.85, "int8 accuracy {int8}\n{text}");
}

/// Bad data gets a clear error naming the place, or with `skip_bad` is left out and counted.
#[test]
fn empty_and_single_class_folders_are_refused_and_broken_images_can_be_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for class in ["a", "b"] {
        for i in 0..3 {
            save_solid(&root.join(format!("train/{class}/{i}.png")), 4, 4, [9; 3]);
        }
        save_solid(&root.join(format!("val/{class}/v.png")), 4, 4, [9; 3]);
    }
    std::fs::write(root.join("train/a/readme.md"), "x").unwrap();
    std::fs::write(root.join("train/b/broken.png"), b"\x89PNG truncated").unwrap();
    let err = data::load(Format::Folder, root, &[1, 4, 4], 0.2, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("broken.png"), "{err}");
    let options = data::LoadOptions {
        val_split: 0.2,
        seed: 0,
        skip_bad: true,
        progress: false,
    };
    let sets = data::load_with(Format::Folder, root, &[1, 4, 4], &options).unwrap();
    assert_eq!(sets.train.len(), 6, "the broken image is left out");
    let notes = sets.notes.join("\n");
    assert!(
        notes.contains("skipped 1 files that are not images")
            && notes.contains("left out 1 images")
            && notes.contains("broken.png"),
        "{notes}"
    );

    // A class folder without images.
    std::fs::create_dir_all(root.join("train/c")).unwrap();
    let err = data::load(Format::Folder, root, &[1, 4, 4], 0.2, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train/c") && err.contains("no training images"),
        "{err}"
    );

    // One class only.
    let one = tmp.path().join("one");
    save_solid(&one.join("only/0.png"), 4, 4, [9; 3]);
    save_solid(&one.join("only/1.png"), 4, 4, [9; 3]);
    let err = data::load(Format::Folder, &one, &[1, 4, 4], 0.5, 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("one class (only)") && err.contains("at least two"),
        "{err}"
    );
}

#[test]
fn a_split_folder_splits_the_same_wherever_it_lies() {
    // The split and the order hash the paths below the root, not where the folder is.
    let tmp = tempfile::tempdir().unwrap();
    let make = |root: &Path| {
        for i in 0..12u8 {
            for (class, base) in [("a", 0u8), ("b", 100)] {
                save_solid(&root.join(format!("{class}/{i}.png")), 4, 4, [base + i; 3]);
            }
        }
    };
    let (here, there) = (tmp.path().join("here"), tmp.path().join("elsewhere/copy"));
    make(&here);
    make(&there);
    let load = |root: &Path| data::load(Format::Folder, root, &[1, 4, 4], 0.3, 7).unwrap();
    let (a, b) = (load(&here), load(&there));
    assert!(!a.test.labels.is_empty() && !a.train.labels.is_empty());
    assert_eq!(a.train.pixels, b.train.pixels);
    assert_eq!(a.test.pixels, b.test.pixels);
    assert_eq!(a.test.labels, b.test.labels);
}
