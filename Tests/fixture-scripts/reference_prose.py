"""Plain-ASCII English prose shared by transformers_reference.py (the teacher-forced chat) and
llamacpp_perplexity.py (the perplexity text). Written for these fixtures; no outside source.

ANSWER is the assistant's answer of the teacher-forced chat; PROSE starts with the same
paragraphs and goes on, for the perplexity run.
"""

QUESTION = "How does a lighthouse work, and why are there so few lighthouse keepers today?"

PARAGRAPHS = [
    "A lighthouse is a tower with a bright lamp at the top that helps ships find their way at "
    "night and in bad weather. Sailors use it in two ways. First, the light warns them that "
    "land, rocks or a dangerous reef are close. Second, every lighthouse has its own pattern of "
    "flashes, so a sailor who counts the seconds between flashes and checks a chart can tell "
    "exactly which lighthouse he is looking at, and therefore where his ship is.",

    "The light itself has changed a great deal over the centuries. The earliest lighthouses "
    "burned wood or coal in an open fire, which was smoky and hard to see from far away. Later, "
    "keepers used oil lamps with polished metal mirrors behind them. The biggest step forward "
    "came in the early nineteenth century, when a French engineer named Augustin Fresnel designed "
    "a new kind of lens. Instead of one thick piece of glass, his lens was made of many rings of "
    "glass prisms arranged around the lamp. The prisms bend the light from the lamp into a narrow, "
    "powerful beam, so that even a small flame could be seen more than twenty miles out at sea.",

    "For a long time, every lighthouse needed people to run it. The keepers carried fuel up the "
    "stairs, trimmed the wicks, cleaned the soot from the glass, and wound the clockwork that "
    "turned the lens. They kept a log of the weather and sounded a fog horn when the air was thick. "
    "It was lonely work, especially on a rock far from shore, and a keeper and his family might "
    "not see anyone else for weeks.",

    "Today almost all lighthouses are automatic. Electric lamps switch on by themselves when it "
    "gets dark, and they can run for years with very little care. Modern ships also carry "
    "satellite navigation, radar and electronic charts, so they rarely need to look for a light "
    "on the shore to know where they are. Because of this, the job of the lighthouse keeper has "
    "nearly disappeared. Many old towers are still working, but others have become museums, "
    "small hotels or simply landmarks that people like to visit and photograph.",

    "Even so, lighthouses have not become useless. Electronic systems can fail, and a small "
    "fishing boat or a sailing yacht may not have the same equipment as a large cargo ship. On a "
    "stormy night, a steady pattern of flashes on the horizon is still one of the simplest and "
    "most reliable signs that a sailor can trust. For that reason, coast guards in many countries "
    "continue to maintain their lights, even though nobody lives in the towers any more.",

    "The buildings themselves are often remarkable pieces of engineering. A tower that stands on "
    "a bare rock in the open sea has to survive waves that can weigh many tons and strike with "
    "enormous force. The builders of the nineteenth century learned to cut large blocks of granite "
    "so that each block locked into the ones around it, like the pieces of a puzzle. The lower "
    "part of the tower was made solid, with no rooms at all, so that the sea could not break in. "
    "Some of these towers were built in places where the workers could only land on the rock for "
    "a few hours at low tide, and the work took many summers to finish.",

    "Life inside a working lighthouse followed a strict routine. The lamp had to be lit at sunset "
    "and put out at sunrise, and the keepers took turns to stay awake through the night to watch "
    "it. In the morning they covered the lens with a curtain, because strong sunlight passing "
    "through the glass could start a fire. They painted the tower, repaired the machinery and "
    "wrote reports for the authorities on shore. Supplies came by boat, but in winter the boat "
    "might not be able to land for a long time, so every station kept a store of food, water "
    "and fuel for emergencies.",

    "Many people still find lighthouses fascinating, and it is easy to see why. They stand at the "
    "edge of the land, facing the open water, and they were built for a single simple purpose: "
    "to keep strangers safe. Writers and painters have used them as symbols of hope, patience "
    "and guidance. Some towns hold festivals for their lighthouse, and volunteers raise money to "
    "repair old towers that the government no longer needs. In this way, the lighthouse has "
    "become part of the history and identity of many coastal communities.",

    "If you ever visit one, try to climb to the top. The stairs are narrow and steep, and there "
    "may be more than two hundred of them, but the view at the end is worth the effort. From the "
    "gallery around the lantern room you can see the coast stretching away in both directions, "
    "the ships moving slowly along the horizon, and the rocks below where the waves break. Then "
    "it becomes clear why people once spent their whole lives keeping that light burning.",
]

# The teacher-forced answer: the first three paragraphs (the chat stays within 300-400 tokens).
ANSWER = "\n\n".join(PARAGRAPHS[:3])

# The perplexity text: all paragraphs, no trailing newline (llama-perplexity's -f drops one).
PROSE = "\n\n".join(PARAGRAPHS)
