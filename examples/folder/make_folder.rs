//! Makes an RGB image folder from Fashion-MNIST for the image-folder example:
//! `OUT/train/<class>/*.png|jpg` and `OUT/val/<class>/…`, 32×32 colour images.
//!
//! What it is, honestly: Fashion-MNIST's grey 28×28 clothes, scaled to 32×32 and
//! coloured (a seeded random garment colour on a seeded random background), half saved
//! as PNG and half as JPEG. Real pictures of clothes, but not photographs: the colours
//! carry no information about the class.
//!
//! `cargo run --release --example make_folder -- OUT [TRAIN_PER_CLASS] [VAL_PER_CLASS]`

use std::path::PathBuf;

use image::{imageops::FilterType, Rgb, RgbImage};
use qatc::data::{self, Split};

const NAMES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

/// SplitMix64: a small, seeded, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn colour(&mut self) -> [f32; 3] {
        let v = self.next();
        [0, 8, 16].map(|s| ((v >> s) & 0xff) as f32)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(
        args.first()
            .ok_or("usage: make_folder OUT [TRAIN_PER_CLASS] [VAL_PER_CLASS]")?,
    );
    let train_per: usize = args.get(1).map_or(Ok(500), |s| s.parse())?;
    let val_per: usize = args.get(2).map_or(Ok(100), |s| s.parse())?;
    let dir = std::env::var_os("QATC_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into());
    let mut rng = Rng(2024);
    for (split, name, per_class) in [
        (Split::Train, "train", train_per),
        (Split::Test, "val", val_per),
    ] {
        let set = data::load_split(&dir, split)?;
        let mut written = [0usize; 10];
        for i in 0..set.len() {
            let label = set.labels[i] as usize;
            if written[label] >= per_class {
                continue;
            }
            let class_dir = out.join(name).join(NAMES[label]);
            std::fs::create_dir_all(&class_dir)?;
            let (fg, bg) = (rng.colour(), rng.colour());
            let grey = set.image(i);
            let rgb = RgbImage::from_fn(set.cols as u32, set.rows as u32, |x, y| {
                let a = grey[y as usize * set.cols + x as usize] as f32 / 255.0;
                Rgb([0, 1, 2].map(|c| (a * fg[c] + (1.0 - a) * bg[c]).round() as u8))
            });
            let rgb = image::imageops::resize(&rgb, 32, 32, FilterType::Triangle);
            let ext = if written[label] % 2 == 0 {
                "png"
            } else {
                "jpg"
            };
            rgb.save(class_dir.join(format!("{i:05}.{ext}")))?;
            written[label] += 1;
        }
        println!(
            "{}: {} images",
            out.join(name).display(),
            written.iter().sum::<usize>()
        );
    }
    Ok(())
}
