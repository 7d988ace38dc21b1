//! A component built against another version of the contract (same names, version 9.0.0):
//! the host must refuse it with a clear message rather than call into it.

wit_bindgen::generate!({
    inline: "
        package canopy:destination@9.0.0;
        interface plugin {
            describe: func() -> string;
        }
        world destination {
            export plugin;
        }
    ",
});

struct WrongWorld;

impl exports::canopy::destination::plugin::Guest for WrongWorld {
    fn describe() -> String {
        "I speak another contract".to_owned()
    }
}

export!(WrongWorld);
